"""StyleGAN2 loss: non-saturating logistic loss, R1, path length regularisation, style mixing.

Phases (see `training_loop`): 'Gmain' (G adversarial loss), 'Greg' (path length), 'Gboth',
'Dmain' (D adversarial loss on fakes and reals), 'Dreg' (R1 on reals), 'Dboth'. Each call to
`accumulate_gradients` runs one phase on one accumulation round and calls `backward()`; the
caller zeroes and applies the gradients.
"""

import numpy as np
import torch

from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix

#----------------------------------------------------------------------------

class Loss:
    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, real_img_degraded=None):  # to be overridden by subclass
        raise NotImplementedError()

    def state_dict(self):
        """Loss state that an exact resume must restore (e.g. the path length running mean)."""
        return {}

    def load_state_dict(self, state):
        assert not state

#----------------------------------------------------------------------------

class StyleGAN2Loss(Loss):
    def __init__(self, device, G, D, augment_pipe=None, style_mixing_prob=0.9, r1_gamma=10,
                 pl_batch_shrink=2, pl_decay=0.01, pl_weight=2):
        """
        Args:
            device:             Device of the networks.
            G, D:               Generator (with `.mapping` and `.synthesis`) and discriminator.
            augment_pipe:       ADA pipe applied to every image D sees, or None.
            style_mixing_prob:  Probability of mixing two latents at a random layer cutoff.
            r1_gamma:           R1 weight; the penalty is `gamma / 2 * |dD(x)/dx|^2` on reals.
            pl_batch_shrink:    Path length regularisation uses `batch / pl_batch_shrink` samples.
            pl_decay:           Decay of the running mean of path lengths.
            pl_weight:          Path length regularisation weight, 0 = off.
        """
        super().__init__()
        self.device = device
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.style_mixing_prob = style_mixing_prob
        self.r1_gamma = r1_gamma
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.pl_weight = pl_weight
        self.pl_mean = torch.zeros([], device=device)

    def state_dict(self):
        return dict(pl_mean=self.pl_mean.detach().cpu().clone())

    def load_state_dict(self, state):
        self.pl_mean.copy_(state['pl_mean'].to(self.device))

    def run_G(self, z, c, update_w_avg=True):
        """z `[N, z_dim]`, c `[N, c_dim]` -> (img `[N, C, H, W]`, ws `[N, num_ws, w_dim]`), with style mixing.

        The mapping of z updates `G.mapping.w_avg` (in training mode) in every phase that calls this:
        Gmain, Greg and Dmain, as in the reference; the style-mixing latents do not."""
        ws = self.G.mapping(z, c, skip_w_avg_update=not update_w_avg)
        if self.style_mixing_prob > 0:
            with torch.autograd.profiler.record_function('style_mixing'):
                cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, ws.shape[1])
                cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob, cutoff, torch.full_like(cutoff, ws.shape[1]))
                layer_idx = torch.arange(ws.shape[1], device=ws.device).reshape(1, -1, 1)
                mixed = self.G.mapping(torch.randn_like(z), c, skip_w_avg_update=True)
                ws = torch.where(layer_idx < cutoff, ws, mixed)  # no host sync, unlike slicing at a tensor index
        img = self.G.synthesis(ws)
        return img, ws

    def run_D(self, img, c):
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, real_img_degraded=None):
        """Run one phase on one round: real_img `[N, C, H, W]` in [-1, 1], real_c/gen_c `[N, c_dim]`,
        gen_z `[N, z_dim]`; gradients are scaled by `gain` (the phase interval)."""
        assert phase in ['Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth']
        do_Gmain = (phase in ['Gmain', 'Gboth'])
        do_Dmain = (phase in ['Dmain', 'Dboth'])
        do_Gpl = (phase in ['Greg', 'Gboth']) and (self.pl_weight != 0)
        do_Dr1 = (phase in ['Dreg', 'Dboth']) and (self.r1_gamma != 0)

        # Gmain: make D call generated images real.
        if do_Gmain:
            with torch.autograd.profiler.record_function('Gmain_forward'):
                gen_img, _gen_ws = self.run_G(gen_z, gen_c)
                gen_logits = self.run_D(gen_img, gen_c)
                training_stats.report('Loss/scores/fake', gen_logits)
                training_stats.report('Loss/signs/fake', gen_logits.sign())
                loss_Gmain = torch.nn.functional.softplus(-gen_logits)
                training_stats.report('Loss/G/loss', loss_Gmain)
            with torch.autograd.profiler.record_function('Gmain_backward'):
                loss_Gmain.mean().mul(gain).backward()

        # Gpl: keep the image change per unit latent change constant (path length regularisation).
        if do_Gpl:
            with torch.autograd.profiler.record_function('Gpl_forward'):
                batch_size = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
                gen_img, gen_ws = self.run_G(gen_z[:batch_size], gen_c[:batch_size])
                pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
                with torch.autograd.profiler.record_function('pl_grads'), conv2d_gradfix.no_weight_gradients():
                    pl_grads = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws], create_graph=True, only_inputs=True)[0]
                pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
                pl_mean = self.pl_mean.lerp(pl_lengths.mean(), self.pl_decay)
                self.pl_mean.copy_(pl_mean.detach())
                pl_penalty = (pl_lengths - pl_mean).square()
                training_stats.report('Loss/pl_penalty', pl_penalty)
                loss_Gpl = pl_penalty * self.pl_weight
                training_stats.report('Loss/G/reg', loss_Gpl)
            with torch.autograd.profiler.record_function('Gpl_backward'):
                # The zero term links the loss to every synthesis parameter (needed by the gradient all-reduce).
                (gen_img[:, 0, 0, 0] * 0 + loss_Gpl).mean().mul(gain).backward()

        # Dmain on fakes: make D call generated images fake.
        loss_Dgen = 0
        if do_Dmain:
            with torch.autograd.profiler.record_function('Dgen_forward'):
                gen_img, _gen_ws = self.run_G(gen_z, gen_c)
                gen_logits = self.run_D(gen_img, gen_c)
                training_stats.report('Loss/scores/fake', gen_logits)
                training_stats.report('Loss/signs/fake', gen_logits.sign())
                loss_Dgen = torch.nn.functional.softplus(gen_logits)
            with torch.autograd.profiler.record_function('Dgen_backward'):
                loss_Dgen.mean().mul(gain).backward()

        # Dmain on reals and R1: one D forward pass serves both.
        if do_Dmain or do_Dr1:
            name = 'Dreal_Dr1' if do_Dmain and do_Dr1 else 'Dreal' if do_Dmain else 'Dr1'
            with torch.autograd.profiler.record_function(name + '_forward'):
                real_img_tmp = real_img.detach().requires_grad_(do_Dr1)
                real_logits = self.run_D(real_img_tmp, real_c)
                training_stats.report('Loss/scores/real', real_logits)
                training_stats.report('Loss/signs/real', real_logits.sign())

                loss_Dreal = 0
                if do_Dmain:
                    loss_Dreal = torch.nn.functional.softplus(-real_logits)
                    training_stats.report('Loss/D/loss', loss_Dgen + loss_Dreal)

                loss_Dr1 = 0
                if do_Dr1:
                    with torch.autograd.profiler.record_function('r1_grads'), conv2d_gradfix.no_weight_gradients():
                        r1_grads = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img_tmp], create_graph=True, only_inputs=True)[0]
                    r1_penalty = r1_grads.square().sum([1, 2, 3])
                    loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                    training_stats.report('Loss/r1_penalty', r1_penalty)
                    training_stats.report('Loss/D/reg', loss_Dr1)

            with torch.autograd.profiler.record_function(name + '_backward'):
                (real_logits * 0 + loss_Dreal + loss_Dr1).mean().mul(gain).backward()

#----------------------------------------------------------------------------

class QCStyleGAN2Loss(StyleGAN2Loss):
    """QC-StyleGAN loss: the StyleGAN2 loss in two modes plus feature distillation.

    Sharp mode (q = 0) is judged by `D` against sharp reals, degraded mode (q ~ N(0, I)) by
    `D_degraded` against degraded reals; both generator images come from the same style-mixed ws.
    Distillation keeps the sharp-mode conv1 features of the DegradBlock blocks equal to the frozen
    source generator's (same ws, same noise). Path length regularisation runs in both modes with
    separate running means. Phases: Gmain, Greg, Dmain, Dreg, D_degradedmain, D_degradedreg
    (and the *both variants). The mapping network's weights are frozen, but as in the released code
    `w_avg` keeps tracking the mapped z of Gmain, Greg, Dmain and D_degradedmain.
    """
    def __init__(self, device, G, D, D_degraded, augment_pipe=None, G_teacher=None, kd_weight=3.0,
                 degraded_fake_weight=2.0, **kwargs):
        """
        Args:
            D_degraded:           Discriminator for degraded images (same architecture as D).
            G_teacher:            Frozen source generator for distillation, or None (no distillation).
            kd_weight:            Weight of the distillation loss (3 in the released code).
            degraded_fake_weight: Weight of D_degraded's loss on fakes (2 in the released code, 1 in the paper).
            kwargs:               StyleGAN2Loss options (r1_gamma, pl_weight, style_mixing_prob, ...).
        """
        super().__init__(device, G, D, augment_pipe=augment_pipe, **kwargs)
        assert G.q_dim > 0, 'QCStyleGAN2Loss needs a QC generator (q_dim > 0)'
        self.D_degraded = D_degraded
        self.G_teacher = G_teacher
        self.kd_weight = kd_weight
        self.degraded_fake_weight = degraded_fake_weight
        self.pl_degraded_mean = torch.zeros([], device=device)

    def state_dict(self):
        return dict(super().state_dict(), pl_degraded_mean=self.pl_degraded_mean.detach().cpu().clone())

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.pl_degraded_mean.copy_(state['pl_degraded_mean'].to(self.device))

    def snapshot_extras(self):
        """Extra networks for snapshot pickles (the reference key name)."""
        return dict(D_degraded=self.D_degraded)

    def sample_q(self, batch_size):
        return torch.randn([batch_size, self.G.q_dim], device=self.device)

    def run_G(self, z, c, update_w_avg=True, q=None, return_features=False):
        """(img, ws[, features]) with style mixing; q None = sharp."""
        ws = self.mix_styles(z, c, update_w_avg=update_w_avg)
        out = self.G.synthesis(ws, q=q, return_features=return_features)
        if return_features:
            return out[0], ws, out[1]
        return out, ws

    def mix_styles(self, z, c, update_w_avg=True):
        """Style-mixed ws `[N, num_ws, w_dim]`; the mapping of z (not of the mixing latents) updates w_avg."""
        ws = self.G.mapping(z, c, skip_w_avg_update=not update_w_avg)
        if self.style_mixing_prob > 0:
            cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, ws.shape[1])
            cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob, cutoff, torch.full_like(cutoff, ws.shape[1]))
            layer_idx = torch.arange(ws.shape[1], device=ws.device).reshape(1, -1, 1)
            ws = torch.where(layer_idx < cutoff, ws, self.G.mapping(torch.randn_like(z), c, skip_w_avg_update=True))
        return ws

    def teacher_features(self, ws, rng_state):
        """Conv1 features of the frozen source generator for the same ws and the same noise draws:
        `rng_state` must be captured right before the student's synthesis call (after style mixing)."""
        devices = [self.device] if self.device.type == 'cuda' else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.set_rng_state(rng_state[0])
            if rng_state[1] is not None:
                torch.cuda.set_rng_state(rng_state[1], self.device)
            _img, features = self.G_teacher.synthesis(ws.detach(), return_features=True)
        return features

    def _rng_state(self):
        return (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.device.type == 'cuda' else None)

    def run_D_degraded(self, img, c):
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D_degraded(img, c)

    def _path_length(self, gen_img, gen_ws, pl_mean_buffer):
        pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
        with conv2d_gradfix.no_weight_gradients():
            pl_grads = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws], create_graph=True, only_inputs=True)[0]
        pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
        pl_mean = pl_mean_buffer.lerp(pl_lengths.mean(), self.pl_decay)
        pl_mean_buffer.copy_(pl_mean.detach())
        return (pl_lengths - pl_mean).square()

    def _r1(self, logits, real_img_tmp):
        with conv2d_gradfix.no_weight_gradients():
            r1_grads = torch.autograd.grad(outputs=[logits.sum()], inputs=[real_img_tmp], create_graph=True, only_inputs=True)[0]
        return r1_grads.square().sum([1, 2, 3])

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, real_img_degraded=None):
        assert phase in ['Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth', 'D_degradedmain', 'D_degradedreg', 'D_degradedboth']
        softplus = torch.nn.functional.softplus
        do_Gmain = (phase in ['Gmain', 'Gboth'])
        do_Gpl = (phase in ['Greg', 'Gboth']) and (self.pl_weight != 0)

        # Gmain: both modes from the same ws, plus distillation of the sharp-mode features.
        if do_Gmain:
            ws = self.mix_styles(gen_z, gen_c)
            rng_state = self._rng_state()  # After mix_styles: the teacher replays the student's noise draws.
            img_sharp, features = self.G.synthesis(ws, return_features=True)
            img_degraded = self.G.synthesis(ws, q=self.sample_q(ws.shape[0]))
            logits_sharp = self.run_D(img_sharp, gen_c)
            logits_degraded = self.run_D_degraded(img_degraded, gen_c)
            training_stats.report('Loss/scores/fake', logits_sharp)
            training_stats.report('Loss/signs/fake', logits_sharp.sign())
            training_stats.report('Loss/scores/fake_degraded', logits_degraded)
            loss = softplus(-logits_sharp) + softplus(-logits_degraded)
            training_stats.report('Loss/G/loss', loss)
            if self.G_teacher is not None and self.kd_weight != 0:
                target = self.teacher_features(ws, rng_state)
                loss_kd = sum(torch.nn.functional.mse_loss(f, t.to(f.dtype)) for f, t in zip(features, target))
                training_stats.report('Loss/G/kd', loss_kd)
                loss = loss + self.kd_weight * loss_kd
            loss.mean().mul(gain).backward()

        # Gpl: path length regularisation in both modes, with separate running means.
        if do_Gpl:
            batch_size = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            ws = self.mix_styles(gen_z[:batch_size], gen_c[:batch_size]).detach().requires_grad_(True)  # mapping is frozen
            img_sharp = self.G.synthesis(ws)
            pl_sharp = self._path_length(img_sharp, ws, self.pl_mean)
            img_degraded = self.G.synthesis(ws, q=self.sample_q(batch_size))
            pl_degraded = self._path_length(img_degraded, ws, self.pl_degraded_mean)
            training_stats.report('Loss/pl_penalty', pl_sharp)
            training_stats.report('Loss/pl_penalty_degraded', pl_degraded)
            loss_Gpl = (pl_sharp + pl_degraded) * self.pl_weight
            training_stats.report('Loss/G/reg', loss_Gpl)
            (img_sharp[:, 0, 0, 0] * 0 + img_degraded[:, 0, 0, 0] * 0 + loss_Gpl).mean().mul(gain).backward()

        # Sharp discriminator: q = 0 fakes vs sharp reals; R1 on sharp reals.
        if phase in ['Dmain', 'Dreg', 'Dboth']:
            self._discriminator_phase(phase, 'D', self.run_D, real_img, real_c, gen_z, gen_c, gain,
                                      q=None, fake_weight=1.0, stats_suffix='')
        # Degraded discriminator: q ~ N(0, I) fakes vs degraded reals; R1 on degraded reals.
        if phase in ['D_degradedmain', 'D_degradedreg', 'D_degradedboth']:
            assert real_img_degraded is not None, 'QC training needs degraded reals (a dataset with a degradation preset)'
            self._discriminator_phase(phase, 'D_degraded', self.run_D_degraded, real_img_degraded, real_c, gen_z, gen_c, gain,
                                      q=self.sample_q(gen_z.shape[0]), fake_weight=self.degraded_fake_weight, stats_suffix='_degraded')

    def _discriminator_phase(self, phase, prefix, run_D, real_img, real_c, gen_z, gen_c, gain, q, fake_weight, stats_suffix):
        softplus = torch.nn.functional.softplus
        do_main = phase in [prefix + 'main', prefix + 'both']
        do_r1 = phase in [prefix + 'reg', prefix + 'both'] and self.r1_gamma != 0
        loss_gen = 0
        if do_main:
            with torch.no_grad():
                gen_img, _ws = self.run_G(gen_z, gen_c, q=q)
            gen_logits = run_D(gen_img, gen_c)
            training_stats.report(f'Loss/scores/fake{stats_suffix}', gen_logits)
            loss_gen = softplus(gen_logits) * fake_weight
            loss_gen.mean().mul(gain).backward()
        if do_main or do_r1:
            real_img_tmp = real_img.detach().requires_grad_(do_r1)
            real_logits = run_D(real_img_tmp, real_c)
            training_stats.report(f'Loss/scores/real{stats_suffix}', real_logits)
            training_stats.report(f'Loss/signs/real{stats_suffix}', real_logits.sign())
            loss_real = 0
            if do_main:
                loss_real = softplus(-real_logits)
                training_stats.report(f'Loss/{prefix}/loss', loss_gen + loss_real)
            loss_r1 = 0
            if do_r1:
                r1_penalty = self._r1(real_logits, real_img_tmp)
                loss_r1 = r1_penalty * (self.r1_gamma / 2)
                training_stats.report(f'Loss/r1_penalty{stats_suffix}', r1_penalty)
                training_stats.report(f'Loss/{prefix}/reg', loss_r1)
            (real_logits * 0 + loss_real + loss_r1).mean().mul(gain).backward()

#----------------------------------------------------------------------------
