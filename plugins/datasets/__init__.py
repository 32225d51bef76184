"""Built-in dataset plugins: the synthetic faces and readers for real datasets."""
