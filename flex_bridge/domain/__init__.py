"""See DESIGN.md for this package's role."""
