"""Tools built on the inference engine: calibration, CUDA graphs, export, FLOP counts,
checkpoints and prediction. They take a model (``afnet.create_model``) or its frozen form
(``afnet.freeze``) and leave the user's model as it was."""
