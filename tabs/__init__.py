"""One module per tab; each exports build(engine) and only calls the engine."""
