"""Giving a model knowledge: documents, the question prompt, RAG, CAG, Compare, evaluation and metrics."""
