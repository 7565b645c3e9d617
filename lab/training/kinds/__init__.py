"""One runner per training kind (sft, dpo, grpo, ppo, pretrain) and the model building they share."""
