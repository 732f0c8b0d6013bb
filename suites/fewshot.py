"""ProtoNet's prototype classifier (Snell et al., 2017), the head every few-shot method starts from.

Prototypes are the mean features (the classifier's input) of each class's support images, with
the model in eval mode. The squared Euclidean distance ``-||f - mu_c||^2`` is, up to the term
``-||f||^2`` that is the same for every class, the linear layer ``W_c = 2 mu_c``, ``b_c =
-||mu_c||^2``: so an episode's classifier is initialised to ProtoNet's, and fine-tuning starts from
ProtoNet's predictions (the query accuracy before any update is ProtoNet's).
"""
import torch


def features(model, x):
    """The classifier's input for ``x`` (the model in its current mode)."""
    out = []
    hook = model.classifier.register_forward_hook(lambda module, args, result: out.append(args[0]))
    try:
        model(x)
    finally:
        hook.remove()
    return out[0]


def prototypes(feats, labels, ways):
    """Mean feature per class 0..ways-1; a class without a support image is an error."""
    counts = torch.bincount(labels, minlength=ways)
    if int(counts.min()) == 0:
        raise ValueError("class %d has no support image: prototypes need at least one per class"
                         % int((counts == 0).nonzero()[0]))
    sums = torch.zeros(ways, feats.shape[1], dtype=feats.dtype, device=feats.device).index_add_(0, labels, feats)
    return sums / counts.unsqueeze(1).to(feats.dtype)


def distance_logits(feats, protos):
    """ProtoNet's logits: minus the squared Euclidean distance to each prototype."""
    return -torch.cdist(feats, protos).pow(2)


@torch.no_grad()
def prototype_head(model, x, y):
    """Set ``model.classifier`` to the prototype classifier of the support set ``(x, y)``."""
    training = model.training
    model.eval()
    protos = prototypes(features(model, x), y, model.classifier.out_features)
    model.train(training)
    model.classifier.weight.copy_(2 * protos)
    model.classifier.bias.copy_(-(protos ** 2).sum(1))
