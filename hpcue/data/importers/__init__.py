"""One module per raw data set; each declares an ``Importer`` and returns ImageArrays per split."""
