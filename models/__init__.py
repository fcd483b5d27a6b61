"""Models: datasets, the architecture zoo, pruning recipes, training and the content-hash cache."""
