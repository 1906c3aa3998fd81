"""Data the kit ships or generates: `digits` (MNIST and scikit-learn digits, Gaussian mixtures, simplex points),
`glyphs` (the captioned glyph images of notebooks 06-07), `prompts` (the two published SD1.4 prompt sets, checked by
sha256) and `example_prompts` (the kit's own prompts, for the stand-in only)."""
