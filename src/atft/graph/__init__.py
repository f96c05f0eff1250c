"""Day graphs: per-date return-correlation kNN graphs among the stocks valid that day."""
