"""The recommender: backbone and LoRA (`backbone`), the frozen item table (`catalog_table`), the two-tower module
(`recommender`), building it once per process (`build`), scoring histories (`scoring`), int8 inference
(`quantize`) and ranking for one listener (`recommend`)."""
