"""What users judged, kept: Compare answers, evaluations, Arena transcripts, battles, votes and the ratings they feed."""
