"""Lightning glue shared by every training: the Trainer factory, batch plans, lr schedule,
uint8 batches and augmentation, and the supervised classifier module."""
