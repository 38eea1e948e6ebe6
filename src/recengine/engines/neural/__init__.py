"""The neural two-tower engine: users and items in one space, for retrieval, similar items and new items.

- ``model.py``     the towers (plain ``nn.Module``): item tower over id + metadata, user tower over the history
- ``features.py``  item metadata → tower inputs, with the vocabularies stored in the artifact
- ``module.py``    the LightningModule: full softmax (small catalogues) or log-Q corrected sampled softmax
- ``task.py``      the training task: module and data from the settings, and the serving engine from the trained module
- ``engine.py``    serving: item matrix, exact / ANN retrieval, ``add_items``, save / load (no Lightning needed)
- ``coldstart.py`` the cold-start evaluation (hide items from training, rank them from metadata alone)
"""
