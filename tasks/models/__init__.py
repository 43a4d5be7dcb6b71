"""Models, one module per family: ``lenet``, ``resnet``, ``detection``, ``recurrent``
(task=names), ``dcgan``, ``torchvision_classifier`` (any torchvision classifier by name) and
``custom`` (the user's own model).

LeNet, resnet18 and fasterrcnn are re-exported here: configs and checkpoints written before the
split name them as ``torchcamp.tasks.models.LeNet`` and so on.
"""

from torchcamp.tasks.models.detection import fasterrcnn
from torchcamp.tasks.models.lenet import LeNet
from torchcamp.tasks.models.resnet import resnet18

__all__ = ["LeNet", "fasterrcnn", "resnet18"]
