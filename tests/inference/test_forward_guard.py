"""Forward passes on one shared model never overlap, so the greedy and sampled lanes decoding at once leave the model
as they found it.

    .venv/bin/python -m pytest -q tests/inference/test_forward_guard.py

Found through the Arena (a base greedy column, a base sampled column and an adapter column): transformers'
`merge_with_config_defaults` writes `config.is_causal` for the length of each forward and puts back what it read.
Two lanes' forwards at once (the engine asks for a non-causal mask) could leave `is_causal=False` behind, and every
later plain forward (adapters, CAG, repetition penalty) then attended to future tokens: answers turned to noise.
"""

from __future__ import annotations

import threading
import time

from lab.inference.generate import GenerationSettings, generate_text, prompt_ids
from support import save_loud_adapter


def test_both_lanes_at_once_leave_plain_forwards_causal(tiny_engine):
    sessions, spec = tiny_engine.sessions, tiny_engine.runtime.spec()
    loaded = sessions.model(spec)
    ids = prompt_ids(loaded.tokenizer, "what is the capital of france ?")
    settings = GenerationSettings(max_new_tokens=12)
    before = generate_text(loaded.model, loaded.tokenizer, ids, settings).text
    engine = sessions.engine_for(spec)

    # Widen every forward a little so the two lanes' forwards overlap whenever the model lets them.
    inside, overlaps = [0], [0]
    guard = threading.Lock()

    def enter(*_):
        with guard:
            inside[0] += 1
            overlaps[0] += inside[0] > 1
        time.sleep(0.002)

    def leave(*_):
        with guard:
            inside[0] -= 1

    layer = loaded.model.model.layers[0]
    hooks = [layer.register_forward_pre_hook(enter), layer.register_forward_hook(leave)]
    try:
        threads = [threading.Thread(target=lambda t=t: list(engine.stream(ids[0].tolist(), GenerationSettings(
            max_new_tokens=24, temperature=t)))) for t in (0.0, 0.9, 0.0, 0.9)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for hook in hooks:
            hook.remove()
    assert overlaps[0] == 0
    assert getattr(loaded.model.config, "is_causal", None) is not False
    assert generate_text(loaded.model, loaded.tokenizer, ids, settings).text == before


def test_an_adapter_column_answers_as_alone_in_any_mix_after_any_request(tiny_engine, tiny_model_dir):
    """The Arena of the report: base greedy, base sampled and an adapter column, three rounds; the adapter's greedy
    answer equals the adapter alone every time, token for token."""
    from lab.inference.arena import ArenaColumn
    save_loud_adapter(tiny_model_dir, tiny_engine.settings.subdir("adapters") / "loud")
    base = tiny_engine.settings.model_id
    adapter = ArenaColumn(f"{base} + adapter loud", GenerationSettings(max_new_tokens=16))
    columns = [ArenaColumn(base, GenerationSettings(max_new_tokens=24)),
               ArenaColumn(base, GenerationSettings(max_new_tokens=24, temperature=0.9)), adapter]

    def answers(cols):
        final = {}
        for reply in tiny_engine.arena.stream("the model", cols, [[] for _ in cols]):
            if reply.done:
                final[reply.index] = reply.text
        return final

    alone = answers([adapter])[0]
    for _ in range(3):
        assert answers(columns)[2] == alone
    assert answers([adapter])[0] == alone
