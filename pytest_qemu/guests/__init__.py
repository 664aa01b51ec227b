"""The guest side: the default guest's kernel, modules and initramfs, built and cached."""
