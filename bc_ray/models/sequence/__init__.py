"""A causal transformer over each user's time-ordered interactions: bc_ray's second model family."""
