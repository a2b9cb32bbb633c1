"""Model building: the families, their datasets, compression into edge and cloud artifacts."""
