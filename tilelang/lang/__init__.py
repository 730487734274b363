"""The kernel language: annotations, tile values and operations, and the AST frontend."""
