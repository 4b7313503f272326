"""The stages of a run, above the algorithms they use: classifier (train / load), prototypes
(features → k-means → selection, from a model), evaluation (CAMs → seed metrics). Each returns what
it produced with a :class:`~lpcam.stages.provenance.Provenance` saying where it came from."""
