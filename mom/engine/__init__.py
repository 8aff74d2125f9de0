"""The MOM method on Hugging Face models. Knows tensors and modules, never widgets or plots."""
