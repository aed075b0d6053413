"""OpenVLA's vision side, with the module names of the official checkpoint: the timm ViT towers
(DINOv2 + SigLIP, or one), their patch features from the second-to-last block, OFT+'s FiLM
conditioning, the Prismatic projector into the LLM's space and OFT's proprio projector."""

from __future__ import annotations

import timm
import torch
from timm.layers import LayerScale
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from torch import nn
from torch.utils.checkpoint import checkpoint

from vla_lab.policies.openvla.configuration_openvla import ViTSpec


class ScaledResidual(nn.Module):
    """timm's LayerScale with its weight named ``scale_factor`` as in the official checkpoint
    (a parameter named ``gamma`` is renamed by some loaders, so upstream avoided it)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


def build_vit(spec: ViTSpec, init_weights: bool = True) -> nn.Module:
    """timm ViT without classifier; ``init_weights=False`` allows building on the meta device."""
    vit = timm.create_model(
        spec.timm_id,
        pretrained=False,
        num_classes=0,
        img_size=spec.img_size,
        act_layer=spec.act_layer,
        weight_init=spec.weight_init if init_weights else "skip",
        **spec.timm_kwargs(),
    )
    for block in vit.blocks:
        for name in ("ls1", "ls2"):
            old = getattr(block, name, None)
            if isinstance(old, LayerScale):
                new = ScaledResidual(old.gamma.shape[0]).to(old.gamma.device)
                if old.gamma.device.type != "meta":
                    new.scale_factor.data.copy_(old.gamma.data)
                setattr(block, name, new)
    if init_weights and spec.pos_embed_init == "sincos":
        init_sincos_pos_embed(vit)
    return vit


def init_sincos_pos_embed(vit: nn.Module) -> None:
    """Writes 2-D sine-cosine codes of the patch grid into the (trainable) patch position embeddings;
    prefix tokens that carry their own embedding (class token) keep theirs."""
    grid = list(vit.patch_embed.grid_size)
    codes = build_sincos2d_pos_embed(grid, vit.embed_dim)  # (H*W, D), values in [-1, 1]
    with torch.no_grad():
        vit.pos_embed[:, vit.pos_embed.shape[1] - codes.shape[0] :].copy_(codes)


class FiLM(nn.Module):
    """OpenVLA-OFT+'s language conditioning of one ViT block: ``x * (1 + gamma) + beta`` after the
    block's attention, gamma and beta projected from the prompt's average token embedding. The same
    gamma and beta apply to every patch, so the towers can turn up the channels of what the
    instruction names while keeping where it is."""

    def __init__(self, llm_dim: int, vision_dim: int) -> None:
        super().__init__()
        self.scale = nn.Linear(llm_dim, vision_dim)
        self.shift = nn.Linear(llm_dim, vision_dim)

    def forward(self, x: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.scale(language)[:, None]) + self.shift(language)[:, None]


def filmed_block(block: nn.Module, film: FiLM, x: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
    """A timm ViT block with ``film`` between its attention and its MLP."""
    x = x + block.drop_path1(block.ls1(block.attn(block.norm1(x))))
    x = film(x, language)
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def penultimate_patches(
    vit: nn.Module,
    x: torch.Tensor,
    grad_ckpt: bool = False,
    films: nn.ModuleList | None = None,
    language: torch.Tensor | None = None,
) -> torch.Tensor:
    """Patch tokens after the second-to-last block (prefix tokens dropped, no final norm); with
    ``films``, each block is conditioned on ``language`` (B, llm_dim)."""
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
    for i, block in enumerate(vit.blocks[:-1]):
        if films is not None:
            args = (block, films[i], x, language)
            fn = filmed_block
        else:
            args, fn = (x,), block
        x = checkpoint(fn, *args, use_reentrant=False) if grad_ckpt and x.requires_grad else fn(*args)
    return x[:, vit.num_prefix_tokens :]


class PrismaticVisionBackbone(nn.Module):
    """The (fused) towers. With ``num_images`` > 1 (OpenVLA-OFT's multi-image input, e.g. a third-person
    and a wrist camera) every image goes through the same towers and the patch sequences are
    concatenated, image after image: ``pixel_values`` stacks the images' channels, (B, n·C, H, W)."""

    def __init__(
        self,
        specs: list[ViTSpec],
        init_weights: bool = True,
        num_images: int = 1,
        film_dim: int | None = None,
    ) -> None:
        """``film_dim``: the LLM width, to condition every block on the instruction (OFT+'s FiLM);
        None: unconditioned towers, as released OpenVLA."""
        super().__init__()
        self.featurizer = build_vit(specs[0], init_weights)
        self.embed_dim = self.featurizer.embed_dim
        self.use_fused_vision_backbone = len(specs) == 2
        if self.use_fused_vision_backbone:
            self.fused_featurizer = build_vit(specs[1], init_weights)
            self.embed_dim += self.fused_featurizer.embed_dim
        self.num_images = num_images
        self.use_film = film_dim is not None
        if self.use_film:
            # separate from the timm blocks, so that their names stay those of the released checkpoint
            self.film = nn.ModuleDict(
                {
                    name: nn.ModuleList(FiLM(film_dim, vit.embed_dim) for _ in vit.blocks[:-1])
                    for name, vit in self._towers()
                }
            )
        self.gradient_checkpointing = False

    def _towers(self) -> list[tuple[str, nn.Module]]:
        towers = [("featurizer", self.featurizer)]
        return towers + (
            [("fused_featurizer", self.fused_featurizer)] if self.use_fused_vision_backbone else []
        )

    def forward(self, pixel_values: torch.Tensor, language: torch.Tensor | None = None) -> torch.Tensor:
        """``language`` (B, llm_dim): the prompts' average token embedding, needed with FiLM."""
        if self.use_film and language is None:
            raise ValueError(
                "these vision towers are FiLM-conditioned (use_film): pass the language embedding"
            )
        if self.num_images == 1:
            return self._patches(pixel_values, language)
        # one batched pass over all images, then each sample's patches side by side
        images = torch.cat(pixel_values.chunk(self.num_images, dim=1), dim=0)
        if language is not None:
            language = language.repeat(self.num_images, 1)
        return torch.cat(self._patches(images, language).chunk(self.num_images, dim=0), dim=1)

    def _patches(self, pixel_values: torch.Tensor, language: torch.Tensor | None) -> torch.Tensor:
        images = (
            torch.split(pixel_values, [3, 3], dim=1) if self.use_fused_vision_backbone else [pixel_values]
        )
        return torch.cat(
            [
                penultimate_patches(
                    vit,
                    image,
                    self.gradient_checkpointing,
                    self.film[name] if self.use_film else None,
                    language,
                )
                for (name, vit), image in zip(self._towers(), images, strict=True)
            ],
            dim=2,
        )


class PrismaticProjector(nn.Module):
    """GELU MLP; the fused variant widens to 4× the vision width first (3 layers)."""

    def __init__(self, fused: bool, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fused = fused
        if fused:
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
            self.act_fn1, self.act_fn2 = nn.GELU(), nn.GELU()
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
            self.act_fn1 = nn.GELU()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act_fn1(self.fc1(patches)))
        return self.fc3(self.act_fn2(x)) if self.fused else x


class ProprioProjector(nn.Module):
    """OpenVLA-OFT's proprio projector: the normalized state becomes one token in the LLM's space."""

    def __init__(self, proprio_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act_fn = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn(self.fc1(state)))
