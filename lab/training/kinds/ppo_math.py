"""A compact PPO for language models, written to be read top to bottom.

    python -m lab train assets/presets/ppo_lora_qa.yaml        # lab/training/kinds/ppo.py drives the loop below

TRL 1.16 has no PPO trainer, so the lab keeps its own. One PPO step:

1. rollout   sample an answer to each prompt of a batch from the current policy;
2. score     one reward per answer (lab/training/data/rewards.py, or a reward model);
3. shape     per-token reward = -kl_coef x (log pi - log pi_ref), plus the score on the last token;
4. GAE       advantages from those rewards and the value head's estimates (gamma, lam), whitened;
5. update    ppo_epochs passes over mini-batches: clipped surrogate + vf_coef x clipped value loss.

Shapes: B answers per batch, P prompt tokens (left-padded), R answer tokens (right-padded after
the end-of-sequence token), H hidden size, V vocabulary. `mask` is [B, R], 1 on answer tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig


class ValueHead(nn.Module):
    """V(s_t): a linear layer from the last hidden state to one number, the expected return from token t on."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [B, R, H] -> [B, R]
        return self.linear(hidden.float()).squeeze(-1)


# ---- the math (pure functions on tensors, unit-tested by hand) -------------------------------------
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std over the masked entries; masked-out entries become 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) for each position: logits [B, R, V], tokens [B, R] -> [B, R]."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each next-token distribution: [B, R, V] -> [B, R] (nats)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_penalised_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                         mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards [B, R] and the per-token KL estimate [B, R].

    kl_t = log pi(a_t) - log pi_ref(a_t) (its mean over sampled tokens estimates KL(pi || pi_ref));
    reward_t = -kl_coef x kl_t, and the answer's score [B] is added on its last token.
    """
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = mask.sum(1).long() - 1  # [B] index of each answer's last token
    rewards[torch.arange(len(scores)), last] += scores
    return rewards, kl


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
                   lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, right to left over the answer tokens; returns (advantages, returns) [B, R].

    delta_t = r_t + gamma V_{t+1} - V_t  (V after the last token is 0)
    A_t = delta_t + gamma lam A_{t+1};  returns_t = A_t + V_t (the value head's target).
    """
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])  # [B]
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def ppo_losses(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
               values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange: float, cliprange_value: float) -> dict[str, torch.Tensor]:
    """Clipped surrogate and clipped value loss, all [B, R] in, scalars out.

    ratio = pi / pi_old; the policy loss takes the worse of ratio x A and clip(ratio, 1 +- cliprange) x A, so a
    token gains nothing from moving its probability further than the clip range. The value loss likewise takes
    the worse of the new and the clipped-to-old prediction.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    policy_loss = masked_mean(torch.max(unclipped, clipped), mask)
    values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    value_loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (values_clipped - returns) ** 2), mask)
    return {"policy_loss": policy_loss, "value_loss": value_loss,
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": 0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask)}


# ---- the model side ------------------------------------------------------------------------------
class ActorCritic(nn.Module):
    """The policy (a causal LM, possibly a PeftModel), its value head, and the frozen reference.

    reference None means the policy is a PeftModel and the reference is the same model with its adapters
    disabled (no second copy in memory); otherwise it is a frozen copy of the starting model.
    """

    def __init__(self, policy: nn.Module, value_head: ValueHead, reference: nn.Module | None) -> None:
        super().__init__()
        self.policy, self.value_head = policy, value_head
        self.reference = [reference]  # a list, so the frozen copy is not registered as a trained submodule

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logprobs, values, entropy), each [B, R], of the answer tokens input_ids[:, P:]."""
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        # Position t predicts token t + 1: the answer tokens P..P+R-1 are predicted from positions P-1..P+R-2.
        logits = out.logits[:, prompt_len - 1:-1] / temperature  # [B, R, V]
        hidden = out.hidden_states[-1][:, prompt_len - 1:-1]  # [B, R, H]
        return (token_logprobs(logits, input_ids[:, prompt_len:]), self.value_head(hidden),
                entropy_from_logits(logits))

    @torch.no_grad()
    def reference_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                           temperature: float) -> torch.Tensor:
        reference = self.reference[0]
        with nullcontext() if reference is not None else self.policy.disable_adapter():
            model = reference if reference is not None else self.policy
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, prompt_len - 1:-1]
        return token_logprobs(logits / temperature, input_ids[:, prompt_len:])


@dataclass
class Rollout:
    input_ids: torch.Tensor  # [B, P+R] prompt (left-padded) then answer (right-padded)
    attention_mask: torch.Tensor  # [B, P+R]
    mask: torch.Tensor  # [B, R] 1 on answer tokens, the end-of-sequence token included
    prompt_len: int  # P
    logprobs: torch.Tensor  # [B, R] under the policy that sampled them
    values: torch.Tensor  # [B, R]
    scores: torch.Tensor  # [B]
    kl: torch.Tensor  # [B, R]
    advantages: torch.Tensor  # [B, R] whitened
    returns: torch.Tensor  # [B, R]
    answers: list[str]


def answer_mask(answer_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """[B, R] 1 up to and including the first end-of-sequence token (all 1 when none was produced)."""
    is_eos = answer_ids == eos_token_id
    after_eos = (torch.cumsum(is_eos, dim=1) - is_eos.long()) > 0  # strictly after the first eos
    return (~after_eos).float()


@torch.no_grad()
def rollout(model: ActorCritic, tokenizer, prompts: list[list[dict[str, str]]],
            score_fn: Callable[[list[str]], list[float]], *, temperature: float, max_new_tokens: int,
            kl_coef: float, gamma: float, lam: float) -> Rollout:
    """Steps 1-4: sample, score, shape the rewards with the KL penalty, and compute whitened advantages."""
    device = next(model.policy.parameters()).device
    enc = tokenizer.apply_chat_template(prompts, add_generation_prompt=True, padding=True, return_tensors="pt",
                                        return_dict=True, tokenizer_kwargs={"padding_side": "left"}).to(device)
    prompt_len = enc["input_ids"].shape[1]
    model.policy.eval()
    # Plain sampling at `temperature` and nothing else (no top-k/top-p/repetition penalty from the model's
    # generation_config), so the log-probabilities computed below are those of the distribution sampled from.
    generation = GenerationConfig(do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                  max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=tokenizer.eos_token_id)
    sequences = model.policy.generate(**enc, generation_config=generation)  # [B, P+R]
    mask = answer_mask(sequences[:, prompt_len:], tokenizer.eos_token_id)  # [B, R]
    attention_mask = torch.cat([enc["attention_mask"], mask.long()], dim=1)
    answers = tokenizer.batch_decode(sequences[:, prompt_len:] * mask.long() + tokenizer.pad_token_id
                                     * (1 - mask.long()), skip_special_tokens=True)
    scores = torch.tensor(score_fn(answers), dtype=torch.float32, device=device)  # [B]
    logprobs, values, _ = model(sequences, attention_mask, prompt_len, temperature)
    ref_logprobs = model.reference_logprobs(sequences, attention_mask, prompt_len, temperature)
    rewards, kl = kl_penalised_rewards(scores, logprobs, ref_logprobs, mask, kl_coef)
    advantages, returns = gae_advantages(rewards, values, mask, gamma, lam)
    return Rollout(sequences, attention_mask, mask, prompt_len, logprobs, values * mask, scores, kl,
                   masked_whiten(advantages, mask), returns, [a.strip() for a in answers])


def ppo_update(model: ActorCritic, optimizer: torch.optim.Optimizer, scheduler, batch: Rollout, *,
               ppo_epochs: int, num_mini_batches: int, cliprange: float, cliprange_value: float, vf_coef: float,
               max_grad_norm: float, temperature: float, generator: torch.Generator) -> dict[str, float]:
    """Step 5: ppo_epochs passes over shuffled mini-batches of the rollout; returns the mean of each statistic."""
    model.policy.train()
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    size = len(batch.answers) // num_mini_batches
    sums: dict[str, float] = {}
    for _ in range(ppo_epochs):
        order = torch.randperm(len(batch.answers), generator=generator)
        for start in range(0, size * num_mini_batches, size):
            idx = order[start:start + size].to(batch.input_ids.device)
            logprobs, values, entropy = model(batch.input_ids[idx], batch.attention_mask[idx], batch.prompt_len,
                                              temperature)
            mask = batch.mask[idx]
            stats = ppo_losses(logprobs, batch.logprobs[idx], batch.advantages[idx], values, batch.values[idx],
                               batch.returns[idx], mask, cliprange, cliprange_value)
            loss = stats["policy_loss"] + vf_coef * stats["value_loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm or float("inf"))
            optimizer.step()
            scheduler.step()
            stats |= {"loss": loss, "grad_norm": grad_norm, "entropy": masked_mean(entropy, mask)}
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
    updates = ppo_epochs * num_mini_batches
    return {key: value / updates for key, value in sums.items()}
