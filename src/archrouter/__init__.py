"""archrouter: one OpenAI-compatible endpoint in front of Transformer, Mamba, RWKV-7 and xLSTM models.

Rooms (arrows one way): kernels <- backends <- router -> policies; evals -> backends, policies;
the CLI (`archrouter.cli`) imports them all.
"""
