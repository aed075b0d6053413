"""The Lightning-aware layer: VLAModule, run directories, callbacks."""
