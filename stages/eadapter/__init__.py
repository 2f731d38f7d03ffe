"""E-Adapter (EmojiDiff-style): decoupled identity and expression branches on a diffusers UNet.

Modules, one concept each:
  spec          adapter config JSON, base-UNet / image-encoder signatures, errors
  layers        cross-attention layer selection by glob patterns
  attention     IPAdapterAttnProcessor2_0 per branch; stock processor for the other layers
  model         EAdapter: projections + processors, attach/detach, save_pretrained/from_pretrained
  image_encoder CLIP expression encoder and its preprocessing
  conditions    identity embedding of the carrier, masked expression template
  augment       template augmentation for "base" training
  layout/text/base_model   loading a diffusers-layout base folder (local or fsspec, cached)
  sampler       DDIM loop with classifier-free guidance
  backend       EAdapterTransferer (ExpressionTransferer protocol)
  storage       fsspec IO and hashing
  training_data triple rows -> pixels and conditions (decode_triples), endless shuffled batches
  training      the per-worker training loop (Ray-free), TrainResult and train_log.json
  checkpoints   training checkpoints: save, find the latest, resume
The Ray Train launch and its CLI live in pipeline/train_adapter.py.
"""

from stages.eadapter.model import EAdapter
from stages.eadapter.spec import EAdapterError, EAdapterIntegrityError, EAdapterMismatchError

__all__ = ["EAdapter", "EAdapterError", "EAdapterIntegrityError", "EAdapterMismatchError"]
