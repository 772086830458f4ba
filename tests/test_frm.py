"""FaceRewardModel: scores equal open_clip's own embeddings, locking, checkpoints, bad input."""
import open_clip
import pytest
import torch
import torch.nn.functional as F
from tolerances import TINY_REWARD_ATOL

from drward.archs.frm_arch import TINY_FRM_CONFIG, FaceRewardModel, save_frm
from drward.utils.options import MissingWeightsError


@pytest.fixture(scope='module')
def frm():
    return FaceRewardModel('tiny')


def test_similarity_equals_cosine_of_open_clip_embeddings(frm):
    images = torch.rand(2, 3, 64, 64)
    captions = ['a photo of a smiling face', 'a blurry face']
    pixels = (images - torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    e_img = frm.clip.encode_image(pixels)
    e_txt = frm.clip.encode_text(open_clip.SimpleTokenizer()(captions))
    expected = F.cosine_similarity(e_img, e_txt, dim=-1)
    # the same towers, but the FRM normalises pixels and features in its own order: float32 rounding
    torch.testing.assert_close(frm.similarity(images, captions), expected, rtol=1e-5, atol=1e-5)


def test_preference_logits_are_temperature_times_cosine(frm):
    a, b = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    captions = ['face one', 'face two', 'face three']
    with torch.no_grad():
        frm.clip.logit_scale.fill_(2.0)
        logits = frm.preference_logits(a, b, captions)
        expected = torch.stack([frm.similarity(a, captions), frm.similarity(b, captions)], dim=1) * torch.e ** 2
    # one batched pass over a and b against two separate passes: float32 rounding of other kernel shapes
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_resize_to_model_input_is_differentiable(frm):
    images = torch.rand(1, 3, 100, 80, requires_grad=True)
    frm.similarity(images, ['a face']).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.parametrize('bad', [torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 1, 64, 64), torch.rand(3, 64, 64)])
def test_images_outside_unit_range_or_wrong_shape_raise(frm, bad):
    with pytest.raises(ValueError, match=r'\[0, 1\]|\(B, 3, H, W\)'):
        frm.similarity(bad, ['x'] * bad.shape[0])


def test_caption_count_must_match(frm):
    with pytest.raises(ValueError, match='captions'):
        frm.similarity(torch.rand(2, 3, 64, 64), ['only one'])


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_lock_leaves_exactly_the_requested_blocks_trainable():
    cfg = {**TINY_FRM_CONFIG, 'vision_cfg': {**TINY_FRM_CONFIG['vision_cfg'], 'layers': 6},
           'text_cfg': {**TINY_FRM_CONFIG['text_cfg'], 'layers': 5}}
    frm = FaceRewardModel(model_cfg=cfg, unlocked_image_groups=4, unlocked_text_layers=2)
    trainable = _trainable(frm)
    vis_blocks = {int(n.split('.')[4]) for n in trainable if n.startswith('clip.visual.transformer.resblocks.')}
    txt_blocks = {int(n.split('.')[3]) for n in trainable if n.startswith('clip.transformer.resblocks.')}
    # vision groups from the end: proj, [block 5 + ln_post], block 4, block 3
    assert vis_blocks == {3, 4, 5}
    assert {'clip.visual.proj', 'clip.visual.ln_post.weight', 'clip.visual.ln_post.bias'} <= trainable
    assert 'clip.visual.conv1.weight' not in trainable and 'clip.visual.class_embedding' not in trainable
    # text: the last 2 blocks + ln_final + projection + logit_scale (HPS v2's set)
    assert txt_blocks == {3, 4}
    assert {'clip.ln_final.weight', 'clip.text_projection', 'clip.logit_scale'} <= trainable
    assert 'clip.token_embedding.weight' not in trainable and 'clip.positional_embedding' not in trainable


def test_default_lock_matches_the_authors_vit_h_set():
    """ViT-H-14 sizes (32 vision / 24 text blocks) with defaults 20 / 11: vision 13–31, text 13–23."""
    cfg = {'embed_dim': 8,
           'vision_cfg': {'image_size': 28, 'layers': 32, 'width': 16, 'head_width': 8, 'patch_size': 14},
           'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 16, 'heads': 2, 'layers': 24}}
    trainable = _trainable(FaceRewardModel(model_cfg=cfg))
    vis = {int(n.split('.')[4]) for n in trainable if n.startswith('clip.visual.transformer.resblocks.')}
    txt = {int(n.split('.')[3]) for n in trainable if n.startswith('clip.transformer.resblocks.')}
    assert vis == set(range(13, 32))
    assert txt == set(range(13, 24))


@pytest.mark.parametrize('wrap', ['state_dict', 'plain', 'module_prefix'])
def test_checkpoint_round_trip_in_official_layouts(tmp_path, frm, wrap):
    path = tmp_path / 'frm.pt'
    state = {k: v.clone() for k, v in frm.clip.state_dict().items()}
    if wrap == 'state_dict':
        save_frm(frm, str(path))
    elif wrap == 'plain':
        torch.save(state, path)
    else:
        torch.save({'state_dict': {f'module.{k}': v for k, v in state.items()}}, path)
    loaded = FaceRewardModel('tiny', checkpoint=str(path))
    images = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(loaded.similarity(images, ['a']), frm.similarity(images, ['a']))


def test_missing_checkpoint_names_key_and_source():
    with pytest.raises(MissingWeightsError, match=r'weights/HPS_v2_compressed.pt.*option key frm.checkpoint.*HPSv2'):
        FaceRewardModel('tiny', checkpoint='weights/HPS_v2_compressed.pt')


def test_mismatched_checkpoint_names_keys(tmp_path):
    torch.save({'state_dict': {'nonsense.weight': torch.zeros(1)}}, tmp_path / 'bad.pt')
    with pytest.raises(RuntimeError, match='unexpected keys'):
        FaceRewardModel('tiny', checkpoint=str(tmp_path / 'bad.pt'))


def test_frozen_scores_keep_gradient_out_of_the_frm(frm):
    frm.zero_grad(set_to_none=True)
    images = torch.rand(1, 3, 64, 64, requires_grad=True)
    score = frm.similarity(images, ['a face'], frozen=True)
    torch.testing.assert_close(score, frm.similarity(images, ['a face']))
    score.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in frm.parameters())


def test_frozen_scores_work_under_gradient_checkpointing():
    frm = FaceRewardModel('tiny', gradient_checkpointing=True)
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    frm.similarity(images, ['a', 'b'], frozen=True).sum().backward()
    assert images.grad.abs().sum() > 0 and all(p.grad is None for p in frm.parameters())


def test_sequence_first_attention_gives_the_batch_first_scores(num_threads):
    # the FRM runs open_clip's transformers sequence-first (a layout change for speed): same weights, same scores
    torch.manual_seed(0)
    frm = FaceRewardModel(model_name='tiny', unlocked_image_groups=2, unlocked_text_layers=1).train()
    transformers = [m for m in frm.clip.modules() if isinstance(m, open_clip.transformer.Transformer)]
    assert transformers and not any(t.batch_first for t in transformers)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    captions = ['a face', 'a smiling face', 'an old face']
    with torch.no_grad():
        sequence_first = frm.similarity(images, captions)
        for t in transformers:
            t.batch_first = True
            for block in t.resblocks:
                block.attn.batch_first = True
        batch_first = frm.similarity(images, captions)
    # fp32, the same products in another memory layout: rounding of unit-scale cosines (TINY_REWARD_ATOL)
    torch.testing.assert_close(sequence_first, batch_first, rtol=0, atol=TINY_REWARD_ATOL)
