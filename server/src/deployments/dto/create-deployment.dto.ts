import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { ArrayMaxSize, IsArray, IsBoolean, IsNotEmpty, IsOptional, IsString, MaxLength } from 'class-validator';

export class CreateDeploymentDto {
  @ApiProperty({ type: String })
  @IsString()
  @IsNotEmpty()
  @MaxLength(200)
  releaseId: string;
  @ApiProperty({ type: String })
  @IsString()
  @IsNotEmpty()
  @MaxLength(200)
  environmentId: string;
  @ApiPropertyOptional({ type: [String] })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(10_000)
  @IsString({ each: true })
  specificMachineIds?: string[];
  @ApiPropertyOptional({ type: [String] })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(10_000)
  @IsString({ each: true })
  excludedMachineIds?: string[];
  @ApiPropertyOptional({ type: Boolean })
  @IsOptional()
  @IsBoolean()
  guidedFailure?: boolean;
  @ApiPropertyOptional({
    type: Boolean,
    description: "when it fails, roll back to the environment's last successful release (default: the environment's)",
  })
  @IsOptional()
  @IsBoolean()
  rollbackOnFailure?: boolean;
}
