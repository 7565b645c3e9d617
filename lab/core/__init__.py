"""What every other package stands on: settings, errors, checks, the device, users and workspaces, ZeroGPU."""
