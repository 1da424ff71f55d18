"""Which codec frames say which text unit: CTC forced alignment for the interleaved LM layout."""
