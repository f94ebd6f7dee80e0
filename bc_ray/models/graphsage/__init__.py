"""GraphSAGE over the user-item graph: bc_ray's first model family (the paper's model)."""
