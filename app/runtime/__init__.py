"""The transport-free model runtime: input schemas, loading and running models, the model cache, training."""
