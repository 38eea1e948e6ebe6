"""SASRec-family next-item engine: ``model`` (nn.Module), ``loss`` (the fused full-softmax CE), ``module``
(LightningModule), ``task`` (training task: module and data from the settings, engine from the trained module),
``engine`` (serving)."""
