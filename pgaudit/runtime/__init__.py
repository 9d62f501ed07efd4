"""Process-level machinery shared by training and auditing: ``torch.distributed`` process groups."""
