terraform {
  # OpenTofu 1.8+ or Terraform 1.8+ (provider-defined functions, `removed`).
  required_version = ">= 1.8.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }
}
