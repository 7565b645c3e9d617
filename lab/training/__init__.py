"""Training jobs: configs (one per kind), kinds (one runner per kind), data, and jobs (runner, status, launch)."""
