"""Best-of-N sampling: prefill, repeat, decode in one jit, then score every trajectory."""
