"""Process-level set-up shared by every command: which devices JAX sees, the compilation cache."""
