"""SASRec-family next-item engine: ``model`` (nn.Module), ``module`` (Lightning training task), ``engine`` (serving)."""
