"""Models: image encoders (:mod:`.encoders`); text towers arrive with the pretraining stage."""
