"""Apps (flows): the graph model and its validation, the applets, and the engine that runs them."""
