"""The folder to name in ``nnUNet_extTrainer`` so that nnU-Net's ``-tr`` finds fdseg's trainers."""
