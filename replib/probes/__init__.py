"""What the kit measures in a trained model: `hooks` (one lifecycle for forward hooks), `representations` (capturing
and pooling activations), `detection` (the paper's memorization detector and Wen et al.'s), `steering`
(representation steering), `metrics` (spikiness, copies, AUROC), `theory` (the paper's closed forms) and `clipscore`
(CLIP similarity for steering)."""
