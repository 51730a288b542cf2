from django.db import models


class Customer(models.Model):
    email = models.TextField(unique=True)
    nickname = models.TextField(null=True)
