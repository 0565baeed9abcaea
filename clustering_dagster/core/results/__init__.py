"""Reading published results: partitions, named trees, search, exports, the map page."""
