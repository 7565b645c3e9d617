"""Training data: datasets and mixtures, preference and RL prompts, rewards, and the Q&A dataset builder."""
