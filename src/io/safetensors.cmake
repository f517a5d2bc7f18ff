# safetensors sources: filled in by the safetensors work
