"""`make soak`: the real processes under injected faults, checked against the Engine's record."""
