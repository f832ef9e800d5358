"""Models: generators, the CLIP semantic extractor, Feat-D, learnable prompt pairs, baseline discriminators."""
