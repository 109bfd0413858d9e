"""Ray mode: workers as Ray actors, pools with a balancer actor, shared limits as a detached actor."""
