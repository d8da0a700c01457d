"""Plain ``nn.Module``s and how to build them: surrogates, generators, victims. No Lightning."""
