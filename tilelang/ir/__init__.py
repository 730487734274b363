"""The intermediate representations: layouts, block IR and thread IR."""
