"""One module per raw data set; each returns ImageArrays per split."""
