"""GPU slices as users meet them: what the hub and the single-user server agree on."""
