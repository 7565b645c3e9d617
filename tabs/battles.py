"""Battles tab: two anonymous contestants answer one prompt side by side; you vote, then see who they were;
every vote feeds a shared leaderboard of Bradley–Terry ratings with confidence intervals.

    python app.py   # then open the Battles tab
"""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from lab.core.spaces import gpu
from lab.engine import Engine
from lab.history.battles import BattleConfig
from tabs.common import GPU, POLL, USER_ERRORS, user_error, waiting_note, with_queue_position

BUNDLED = "bundled guide"
"""The document choice that means the lab's own guide rather than one of the user's uploads."""
VOTES = {"a": "A is better", "b": "B is better", "tie": "a tie", "both_bad": "both are bad"}
LEADERBOARD_COLUMNS = ["rank", "contestant", "rating", "95% interval", "votes"]


def leaderboard_frame(board) -> pd.DataFrame:
    rows = [[rank, r.name, round(r.rating), f"{r.ci_low:.0f} – {r.ci_high:.0f}", r.votes]
            for rank, r in enumerate(board.ratings, 1)]
    return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)


def leaderboard_notice(board) -> str:
    shown = f"{board.total_votes} vote{'s' if board.total_votes != 1 else ''} from every user so far."
    return f"{shown} ⚠️ {board.notice}" if board.notice else shown


def reveal_markdown(reveal: dict) -> str:
    outcome = (f"your vote: {VOTES[reveal['winner']]}" if reveal["winner"] else
               "discarded: no vote was recorded and the battle is not kept")
    lines = [f"**Model A** was **{html.escape(reveal['a'])}** · **Model B** was **{html.escape(reveal['b'])}** · "
             f"{outcome}."]
    for side in "ab":
        if reveal.get(f"{side}_error"):
            lines.append(f"Model {side.upper()} could not answer: {html.escape(reveal[f'{side}_error'])}")
    return "\n\n".join(lines)


def build(engine: Engine) -> None:
    def user_state(request: gr.Request):
        """What differs per user: their pool and their uploads (the page itself is built once for everyone)."""
        user = engine.uploads.user_of(request.username)
        try:
            pool, uploads = engine.battles.pool(user), engine.uploads.names(user)
        except USER_ERRORS:  # an unwritable data directory: the first battle says so
            return gr.update(), gr.update()
        return (gr.update(choices=engine.battles.choices(), value=pool),
                gr.update(choices=[BUNDLED, *uploads]))

    def board():
        try:
            fitted = engine.battles.ratings()
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        return leaderboard_frame(fitted), leaderboard_notice(fitted)

    def start(pool: list[str], document: str, prompt: str, max_new, top_k, reserve, request: gr.Request):
        """Draw two contestants and stream both answers. The vote buttons open only once both sides have finished,
        and only when both said something: a side that failed or came back empty is shown as such, and the battle
        can then only be discarded."""
        closed = [gr.update(interactive=False)] * len(VOTES)
        texts = ["", ""]
        try:
            user = engine.uploads.user_of(request.username)
            cfg = BattleConfig(max_new_tokens=int(max_new or 0), top_k=int(top_k or 0), reserve_tokens=int(reserve or 0))
            upload = None if document in (None, "", BUNDLED) else document
            number = engine.battles.start(user, pool or [], prompt, upload, cfg)
            yield number, *texts, "Both answers are streaming; who is who stays hidden until you vote.", *closed, \
                gr.update(interactive=False)
            caller = engine.requests.new_caller("battle", user, request.session_hash)
            raw, errors, finished = ["", ""], [None, None], [False, False]
            for kind, value in with_queue_position(engine, caller, engine.battles.stream(user, number, caller)):
                if kind == "waiting":
                    yield number, *texts, waiting_note(engine, value), *closed, gr.update(interactive=False)
                    continue
                side = value.side
                raw[side], errors[side], finished[side] = value.text, value.error, value.done
                empty = value.done and not value.text.strip()
                texts[side] = (f"⚠️ {value.error}" if value.error else
                               f"⚠️ {engine.battles.EMPTY_ANSWER}" if empty else value.text)
                yield number, *texts, "Both answers are streaming…", *closed, gr.update(interactive=False)
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        why = (engine.battles.vote_refusal(raw, errors) if all(finished)
               else "The answers did not finish; discard this battle.")
        if why:
            yield number, *texts, f"⚠️ {why}", *closed, gr.update(interactive=True)
            return
        opened = [gr.update(interactive=True)] * len(VOTES)
        yield number, *texts, "Which answer is better? Vote to see who gave it, or discard the battle.", *opened, \
            gr.update(interactive=True)

    def vote(winner: str, number: int | None, request: gr.Request):
        if number is None:
            raise gr.Error("Start a battle first: type a prompt and press Battle.")
        try:
            reveal = engine.battles.vote(engine.uploads.user_of(request.username), number, winner)
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        return (reveal_markdown(reveal), *[gr.update(interactive=False)] * (len(VOTES) + 1), *board())

    def voter(winner: str):
        def cast(number: int | None, request: gr.Request):
            return vote(winner, number, request)
        return cast

    def discard(number: int | None, request: gr.Request):
        """Drop the battle without a vote; with nothing left to judge, who was who can be shown."""
        if number is None:
            raise gr.Error("There is no battle to discard: type a prompt and press Battle.")
        try:
            reveal = engine.battles.discard(engine.uploads.user_of(request.username), number)
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        return None, reveal_markdown(reveal), *[gr.update(interactive=False)] * (len(VOTES) + 1)

    def keep_pool(pool: list[str], team: bool, request: gr.Request):
        try:
            kept = engine.battles.save_pool(engine.uploads.user_of(request.username), pool or [], team=bool(team))
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        gr.Info(f"Kept {'for the whole team' if team else 'as your pool'}: {', '.join(kept)}.")

    with gr.Tab("Battles", id="battles") as tab:
        gr.Markdown("Two contestants drawn at random from the pool answer the same prompt with the same settings "
                    "(greedy decoding, the same max_new_tokens). You see only **Model A** and **Model B**; vote, and "
                    "their names appear. Every vote, from every user, feeds the leaderboard below: Bradley–Terry "
                    "ratings (Elo-like, 1000 on average) with 95% bootstrap intervals. rag, cag and full answer from "
                    "the document you pick.")
        choices = engine.battles.choices()
        with gr.Row():
            pool = gr.CheckboxGroup(choices, value=choices, label="Pool: who may be drawn", scale=3,
                                    elem_id="battle-pool", info="models, adapters and endpoints as in the Arena; "
                                                                "rag, cag and full on the document")
            document = gr.Dropdown([BUNDLED], value=BUNDLED, label="Document (for rag, cag and full)", scale=1,
                                   elem_id="battle-document")
        with gr.Row():
            team = gr.Checkbox(False, label="for the whole team (admins)", scale=1)
            keep_btn = gr.Button("Keep this pool", scale=1)
        with gr.Accordion("Settings (the same for both contestants)", open=False):
            with gr.Row():
                max_new = gr.Number(96, precision=0, label="max_new_tokens", elem_id="battle-max-new")
                top_k = gr.Number(3, precision=0, label="RAG top-k", elem_id="battle-top-k")
                reserve = gr.Number(256, precision=0, label="tokens kept for prompt and answer (cag, full)",
                                    elem_id="battle-reserve")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", placeholder="What does CAG store in the KV cache?", scale=4,
                                elem_id="battle-prompt")
            start_btn = gr.Button("Battle", variant="primary", scale=1, elem_id="battle-start")
        status = gr.Markdown(elem_id="battle-status")
        with gr.Row():
            answer_a = gr.Textbox(label="Model A", lines=8, interactive=False, elem_id="battle-a")
            answer_b = gr.Textbox(label="Model B", lines=8, interactive=False, elem_id="battle-b")
        with gr.Row():
            buttons = {key: gr.Button(f"{icon} {VOTES[key][0].upper()}{VOTES[key][1:]}", interactive=False,
                                      elem_id=f"battle-vote-{key}")
                       for key, icon in (("a", "👈"), ("b", "👉"), ("tie", "🤝"), ("both_bad", "👎"))}
            discard_btn = gr.Button("🗑️ Discard (no vote)", interactive=False, elem_id="battle-discard")
        reveal = gr.Markdown(elem_id="battle-reveal")
        gr.Markdown("### Leaderboard")
        notice = gr.Markdown(elem_id="battle-notice")
        table = gr.Dataframe(pd.DataFrame(columns=LEADERBOARD_COLUMNS), interactive=False, label="Ratings, best first",
                             elem_id="battle-leaderboard")
        refresh_btn = gr.Button("Refresh the leaderboard", size="sm")

        number = gr.State(None)
        inputs = [pool, document, prompt, max_new, top_k, reserve]
        judging = [*buttons.values(), discard_btn]
        outputs = [number, answer_a, answer_b, status, *judging]

        def cleared():
            """Before the new battle is drawn: no earlier reveal, and nothing to vote on until it has answered."""
            return "", *[gr.update(interactive=False)] * len(judging)

        start_btn.click(cleared, None, [reveal, *judging], queue=False).then(
            gpu(start), inputs, outputs, api_name="battle", **GPU)
        prompt.submit(cleared, None, [reveal, *judging], queue=False).then(
            gpu(start), inputs, outputs, api_visibility="private", **GPU)
        for key, button in buttons.items():
            button.click(voter(key), number, [reveal, *judging, table, notice], api_visibility="private", **POLL)
        discard_btn.click(discard, number, [number, reveal, *judging], api_name="battle_discard", **POLL)
        keep_btn.click(keep_pool, [pool, team], None, api_name="battle_pool", **POLL)
        tab.select(user_state, None, [pool, document], **POLL).then(board, None, [table, notice], **POLL)
        refresh_btn.click(board, None, [table, notice], api_name="battle_leaderboard", **POLL)
